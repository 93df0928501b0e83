"""Example torchship plugin: a model (``model``) and the data set its recipe trains on (``data``)."""
