"""The embedded default dataset: photos shipped in installed packages and fakes from random generator decoders."""
