"""The parts: one module per config group (a registry dict and a build_<group> function each)."""
