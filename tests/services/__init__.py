"""Real services for the test suite: started locally, or taken from the environment."""
