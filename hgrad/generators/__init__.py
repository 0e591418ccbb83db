"""grammar -> render: host-side generators f(beta, r) and the headless rasterizer."""
