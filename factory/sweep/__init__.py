"""Sweeps: Ray Tune trials over similarity ranges, mixup coefficients and recognizer settings,
tracked as nested MLflow runs and compared from MLflow alone."""
