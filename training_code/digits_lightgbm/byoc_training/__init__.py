"""The BYOC program: the SageMaker /opt/ml contract implemented without the toolkit, for training
(``train``: cli.py) and for hosting (``serve``: server.py)."""
