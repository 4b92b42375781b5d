"""The lab bench that the tests and the scripts share: a real MLflow server on a free port, the data and a
tiny model to train on, the bad-input cases. Not part of emo itself: nothing in `emo` imports it."""
