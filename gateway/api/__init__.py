"""HTTP routes: recognition (detect, verify, identify), galleries/subjects/faces, health and metrics."""
