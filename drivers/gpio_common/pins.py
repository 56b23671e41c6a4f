"""Pin names as config files write them (17, "GPIO17", "BCM17", "BOARD11", "J8:11") made canonical."""

from __future__ import annotations

from functools import cache
from typing import Annotated, Any

from pydantic import BeforeValidator

# Every 40-pin Raspberry Pi (2B to 5) shares one header layout, so the names resolve the same
# on any of them; this is the revision gpiozero's MockFactory pretends to be (a Pi 3B).
HEADER_REVISION = 0xA02082

PIN_HELP = ("a BCM GPIO number (17) or a name gpiozero accepts: 'GPIO17', 'BCM17', 'BOARD11', "
            "'J8:11', 'WPI0'")


@cache
def _board() -> Any:
    from gpiozero.pins.pi import PiBoardInfo

    return PiBoardInfo.from_revision(HEADER_REVISION)


def canonical_pin(value: Any) -> str:
    """The canonical gpiozero name (``"GPIO17"``) of a pin given as a number or any pin name.

    Raises:
        ValueError: not a pin of the 40-pin header, or a power/ground pin rather than a GPIO.
    """
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"expected {PIN_HELP}")
    spec: int | str = value
    if isinstance(value, str):
        spec = value.strip().upper()
        if spec.isdigit():
            spec = int(spec)
    found = list(_board().find_pin(spec))
    if not found:
        raise ValueError(f"no such pin {value!r}: expected {PIN_HELP}")
    name = str(found[0][1].name)
    if not name.startswith("GPIO"):
        raise ValueError(f"pin {value!r} is {name}, not a GPIO pin")
    return name


def check_pull(pin: str, pull: str) -> None:
    """Refuse a pull a pin cannot have: GPIO2 and GPIO3 (I2C) have fixed 1.8k pull-ups.

    Raises:
        ValueError: ``pull`` is not the pin's fixed pull.
    """
    for _header, info in _board().find_pin(pin):
        if info.pull and info.pull != pull:
            raise ValueError(f"{pin} has a fixed pull-{info.pull} resistor: set its pull to "
                             f"\"{info.pull}\" or use another pin")


def bcm_number(pin: str) -> int:
    """The BCM number of a canonical pin name: ``"GPIO17"`` -> 17."""
    return int(pin.removeprefix("GPIO"))


def pin_resource(pin: str) -> str:
    """The exclusive resource a device claims for ``pin``: ``"gpio:17"`` (the core compares these)."""
    return f"gpio:{bcm_number(canonical_pin(pin))}"


PinName = Annotated[str, BeforeValidator(canonical_pin)]
"""A config field holding a pin; validated and stored as its canonical name (``"GPIO17"``)."""
