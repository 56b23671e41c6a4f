"""The store-edge-agent conformance kit, run on this driver: each check is one test."""

from agent.conformance import DriverConformance


class TestAcmeEasConformance(DriverConformance):
    driver = "acme_eas"
