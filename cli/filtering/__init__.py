"""`evoinstruct filter`: clean an existing data set with the daemon's stages."""
