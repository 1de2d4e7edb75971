"""cargobay: a container registry implementing the OCI Distribution Specification."""

__version__ = "0.1.0"
