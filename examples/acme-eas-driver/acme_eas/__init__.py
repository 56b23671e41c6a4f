"""acme_eas: a store-edge-agent driver for ACME EAS pedestal controllers (a worked example)."""

from acme_eas.driver import AcmeEasDriver

__all__ = ["AcmeEasDriver"]
