"""The main job: every stage from corpus to report, and its run-directory layout."""
