"""Model compression: the Keras backend lives in raylm.compress.keras."""
