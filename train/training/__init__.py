"""Training: one experiment from config to MLflow run, in named steps."""
