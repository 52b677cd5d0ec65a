"""The ground floor under everything that runs a model: processes (distributed), precision, devices."""
