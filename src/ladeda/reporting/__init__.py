"""Pictures and words for people: the Markdown report, its figures and patch heatmaps."""
