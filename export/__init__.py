"""SavedModel export: the contract between training, TF Serving and the Beam jobs."""
