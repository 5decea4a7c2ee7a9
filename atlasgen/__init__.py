"""atlasgen: static, citable, offline feature atlases of image networks."""

__version__ = "0.1.0"
