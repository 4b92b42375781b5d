"""`emo export`: a registered model as an ONNX graph (fp32 or int8) that MLflow serves without torch (`served`),
checked against its source (`parity`), built by `graph`, logged and registered by `command`; and `emo predict` from
such a version (`predict`). Nothing here imports torch at import time: the served model and `predict` never do."""
