"""Learning algorithms behind one contract (`algos.base.Algorithm`)."""
