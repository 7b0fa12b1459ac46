"""Running SageMaker training jobs on this machine, as the containers would run them."""
