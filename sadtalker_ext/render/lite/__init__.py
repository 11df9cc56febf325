"""Weights-free renderer: piecewise-affine mesh warping of the portrait plus a painted mouth interior."""
