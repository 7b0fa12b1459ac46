"""The BYOC training program: the SageMaker /opt/ml contract implemented without the toolkit."""
