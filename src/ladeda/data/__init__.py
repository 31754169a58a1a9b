"""Data: image files, folder datasets and their splits, transforms, loaders and the data check."""
