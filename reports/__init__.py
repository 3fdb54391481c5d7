"""Reports from run directories and studies: tables, statistics, figures."""
