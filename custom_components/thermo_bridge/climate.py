"""Climate entity: one per thermostat, shaped by the capabilities its config declares."""

from __future__ import annotations

from typing import Any

from homeassistant.components.climate import ClimateEntity
from homeassistant.components.climate.const import (
    ATTR_HVAC_MODE,
    ATTR_TARGET_TEMP_HIGH,
    ATTR_TARGET_TEMP_LOW,
    ClimateEntityFeature,
    HVACAction,
    HVACMode,
)
from homeassistant.const import (
    ATTR_TEMPERATURE,
    PRECISION_TENTHS,
    PRECISION_WHOLE,
    Platform,
    UnitOfTemperature,
)
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddEntitiesCallback
from homeassistant.util.unit_conversion import TemperatureConverter

from .bridge import ThermoBridgeConfigEntry
from .entity import ThermoBridgeEntity, async_setup_platform_entities
from .protocol import DeviceConfig, HvacMode
from .protocol.models import THERMOSTAT_ENUM_STATE, THERMOSTAT_NUMBER_STATE

PARALLEL_UPDATES = 0
_UNITS = {"°C": UnitOfTemperature.CELSIUS, "°F": UnitOfTemperature.FAHRENHEIT, "K": UnitOfTemperature.KELVIN}


async def async_setup_entry(
    hass: HomeAssistant, entry: ThermoBridgeConfigEntry, async_add_entities: AddEntitiesCallback
) -> None:
    """Add a climate entity for every thermostat, now and as devices are discovered."""
    await async_setup_platform_entities(hass, entry, async_add_entities, Platform.CLIMATE, ThermoBridgeClimate)


def _precision(config: DeviceConfig, step: float) -> float:
    """Display precision of temperatures: the measurement's if declared, else from the step.

    HA rounds current and target temperatures alike, so a 0.5 step must not hide a 0.1
    resolution sensor.
    """
    measurement = config.measurement("temperature")
    if measurement is not None and measurement.precision is not None:
        return PRECISION_WHOLE if measurement.precision == 0 else PRECISION_TENTHS
    return PRECISION_WHOLE if step >= 1 else PRECISION_TENTHS


class ThermoBridgeClimate(ThermoBridgeEntity, ClimateEntity):
    """A thermostat; shows commanded values until the device confirms them (no bounce)."""

    _platform_key = Platform.CLIMATE

    _attr_name = None
    _listen_keys = frozenset({*THERMOSTAT_NUMBER_STATE, *THERMOSTAT_ENUM_STATE, "temperature", "humidity"})

    def _update_from_config(self, config: DeviceConfig) -> None:
        thermo = config.thermostat
        if thermo is None:  # pragma: no cover - only thermostats get a climate entity
            return
        features = ClimateEntityFeature(0)
        if thermo.setpoint.has_single:
            features |= ClimateEntityFeature.TARGET_TEMPERATURE
        if thermo.setpoint.has_range:
            features |= ClimateEntityFeature.TARGET_TEMPERATURE_RANGE
        if thermo.presets:
            features |= ClimateEntityFeature.PRESET_MODE
        if thermo.fan_modes:
            features |= ClimateEntityFeature.FAN_MODE
        if thermo.swing_modes:
            features |= ClimateEntityFeature.SWING_MODE
        if thermo.humidity is not None:
            features |= ClimateEntityFeature.TARGET_HUMIDITY
            self._attr_min_humidity = thermo.humidity.minimum
            self._attr_max_humidity = thermo.humidity.maximum
        if HvacMode.OFF in thermo.hvac_modes and len(thermo.hvac_modes) > 1:
            features |= ClimateEntityFeature.TURN_ON | ClimateEntityFeature.TURN_OFF
        self._attr_supported_features = features
        self._attr_hvac_modes = [HVACMode(mode.value) for mode in thermo.hvac_modes]
        self._attr_preset_modes = list(thermo.presets) or None
        self._attr_fan_modes = list(thermo.fan_modes) or None
        self._attr_swing_modes = list(thermo.swing_modes) or None
        self._attr_temperature_unit = _UNITS[thermo.temperature_unit]
        self._attr_min_temp = thermo.min_temp
        self._attr_max_temp = thermo.max_temp
        self._attr_target_temperature_step = thermo.temp_step
        self._attr_precision = _precision(config, thermo.temp_step)
        measurement = config.measurement("temperature")
        self._current_temperature_unit = _UNITS[measurement.unit] if measurement and measurement.unit else None
        self._has_humidity = config.measurement("humidity") is not None

    def _number(self, key: str) -> float | None:
        value = self._device.value(key)
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None

    def _text(self, key: str) -> str | None:
        value = self._device.value(key)
        return value if isinstance(value, str) else None

    @property
    def current_temperature(self) -> float | None:
        """The measured temperature, in the thermostat's unit."""
        value = self._number("temperature")
        unit = self._current_temperature_unit
        if value is None or unit is None or unit == self._attr_temperature_unit:
            return value
        return TemperatureConverter.convert(value, unit, self._attr_temperature_unit)

    @property
    def current_humidity(self) -> float | None:
        """The measured humidity."""
        return self._number("humidity") if self._has_humidity else None

    @property
    def target_temperature(self) -> float | None:
        """The single setpoint."""
        return self._number("target_temperature")

    @property
    def target_temperature_low(self) -> float | None:
        """The lower setpoint of the range."""
        return self._number("target_temperature_low")

    @property
    def target_temperature_high(self) -> float | None:
        """The upper setpoint of the range."""
        return self._number("target_temperature_high")

    @property
    def target_humidity(self) -> float | None:
        """The humidity setpoint."""
        return self._number("target_humidity")

    @property
    def hvac_mode(self) -> HVACMode | None:
        """The operating mode; None (unknown) until reported."""
        mode = self._text("hvac_mode")
        return HVACMode(mode) if mode is not None else None

    @property
    def hvac_action(self) -> HVACAction | None:
        """What the device is doing now, when it reports it."""
        action = self._text("hvac_action")
        return HVACAction(action) if action is not None else None

    @property
    def preset_mode(self) -> str | None:
        """The active preset."""
        return self._text("preset")

    @property
    def fan_mode(self) -> str | None:
        """The fan mode."""
        return self._text("fan_mode")

    @property
    def swing_mode(self) -> str | None:
        """The swing mode."""
        return self._text("swing_mode")

    async def _send(self, values: dict[str, Any]) -> None:
        await self._bridge.async_send_command(self._device, values)

    async def async_set_temperature(self, **kwargs: Any) -> None:  # noqa: ANN401 - HA's signature
        """Set the single setpoint and/or the range, optionally with a mode."""
        values: dict[str, Any] = {}
        if (mode := kwargs.get(ATTR_HVAC_MODE)) is not None:
            values["hvac_mode"] = str(mode)
        if (temperature := kwargs.get(ATTR_TEMPERATURE)) is not None:
            values["target_temperature"] = temperature
        if (low := kwargs.get(ATTR_TARGET_TEMP_LOW)) is not None:
            values["target_temperature_low"] = low
        if (high := kwargs.get(ATTR_TARGET_TEMP_HIGH)) is not None:
            values["target_temperature_high"] = high
        await self._send(values)

    async def async_set_hvac_mode(self, hvac_mode: HVACMode) -> None:
        """Set the operating mode."""
        await self._send({"hvac_mode": str(hvac_mode)})

    async def async_turn_off(self) -> None:
        """Switch the thermostat off."""
        await self._send({"hvac_mode": HvacMode.OFF.value})

    async def async_turn_on(self) -> None:
        """Switch on to the last reported mode, else the first mode the device lists."""
        current = self._device.values.get("hvac_mode")
        if isinstance(current, str) and current != HvacMode.OFF:
            mode = current
        else:
            mode = next(m.value for m in self._attr_hvac_modes or () if m is not HVACMode.OFF)
        await self._send({"hvac_mode": mode})

    async def async_set_preset_mode(self, preset_mode: str) -> None:
        """Set the preset."""
        await self._send({"preset": preset_mode})

    async def async_set_fan_mode(self, fan_mode: str) -> None:
        """Set the fan mode."""
        await self._send({"fan_mode": fan_mode})

    async def async_set_swing_mode(self, swing_mode: str) -> None:
        """Set the swing mode."""
        await self._send({"swing_mode": swing_mode})

    async def async_set_humidity(self, humidity: int) -> None:
        """Set the humidity setpoint."""
        await self._send({"target_humidity": humidity})
