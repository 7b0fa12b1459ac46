"""smtrain: start, follow and run SageMaker training workflows (the CLI and the offline engine)."""
