"""Pure tensor functions shared by the detectors: locations and levels, post-processing."""
