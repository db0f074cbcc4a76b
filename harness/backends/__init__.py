"""Model backends behind one contract (base); `factory` opens them by name."""
