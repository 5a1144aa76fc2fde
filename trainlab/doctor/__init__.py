"""The training doctor: smells at start, watch per row, signal health, fixes, reports."""
