// Generated from docs/schemas/device-config.schema.json by json-schema-to-typescript (clients/js/scripts/generate-types.mjs).
// Do not edit: run `npm run generate -w @thermo-bridge/client` after changing the source.

/**
 * 1-128 printable characters, not only spaces.
 */
export type Text = string;
/**
 * A short lowercase identifier (a translatable key).
 */
export type Name = string;

/**
 * Payload of <base>/<device_id>/config: retained, QoS 1, published by the device. An empty retained payload removes the device (not covered by this schema). See docs/protocol.md.
 */
export interface DeviceConfig {
  /**
   * Protocol schema version. A newer number is refused with reason unsupported_schema.
   */
  schema: 1;
  /**
   * Must equal the <device_id> of the topic.
   */
  id: string;
  kind: "thermostat" | "sensor";
  name: Text;
  /**
   * Optional; null means absent.
   */
  manufacturer?: Text | null;
  /**
   * Optional; null means absent.
   */
  model?: Text | null;
  /**
   * Optional; null means absent.
   */
  sw_version?: Text | null;
  /**
   * Optional; null means absent.
   */
  suggested_area?: Text | null;
  /**
   * What the device measures, keyed by measurement type.
   */
  measurements?: {
    temperature?: {
      unit: "°C" | "°F" | "K";
      /**
       * Decimals to display.
       */
      precision?: number | null;
    };
    humidity?: {
      unit: "%";
      /**
       * Decimals to display.
       */
      precision?: number | null;
    };
    battery?: {
      unit: "%";
      /**
       * Decimals to display.
       */
      precision?: number | null;
    };
    battery_voltage?: {
      unit: "V" | "mV";
      /**
       * Decimals to display.
       */
      precision?: number | null;
    };
    co2?: {
      unit: "ppm";
      /**
       * Decimals to display.
       */
      precision?: number | null;
    };
    pressure?: {
      unit: "hPa" | "kPa" | "Pa" | "mbar" | "inHg" | "mmHg" | "psi";
      /**
       * Decimals to display.
       */
      precision?: number | null;
    };
    illuminance?: {
      unit: "lx";
      /**
       * Decimals to display.
       */
      precision?: number | null;
    };
    pm25?: {
      unit: "µg/m³";
      /**
       * Decimals to display.
       */
      precision?: number | null;
    };
    signal?: {
      unit: "dBm";
      /**
       * Decimals to display.
       */
      precision?: number | null;
    };
    /**
     * A boolean measurement: no unit, no precision.
     */
    window_open?: {
      unit?: null;
      precision?: null;
    };
    /**
     * A boolean measurement: no unit, no precision.
     */
    low_battery?: {
      unit?: null;
      precision?: null;
    };
    /**
     * A boolean measurement: no unit, no precision.
     */
    fault?: {
      unit?: null;
      precision?: null;
    };
  };
  /**
   * Momentary events the device can publish on <base>/<id>/event.
   *
   * @maxItems 64
   */
  events?: Name[];
  /**
   * Seconds without any state message after which consumers treat the values as unavailable.
   */
  expire_after?: number | null;
  thermostat?: Thermostat;
}
/**
 * Capabilities of a thermostat: what it can be told to do. Defaults depend on temperature_unit (°C: 7/35/0.5, °F: 45/95/1).
 */
export interface Thermostat {
  /**
   * @minItems 1
   */
  hvac_modes: [
    "off" | "heat" | "cool" | "heat_cool" | "auto" | "dry" | "fan_only",
    ...("off" | "heat" | "cool" | "heat_cool" | "auto" | "dry" | "fan_only")[]
  ];
  temperature_unit?: "°C" | "°F";
  /**
   * single: target_temperature; range: target_temperature_low/high; both: either.
   */
  setpoint?: "single" | "range" | "both";
  /**
   * Lowest settable setpoint (°C: -50..100, °F: -58..212).
   */
  min_temp?: number;
  /**
   * Highest settable setpoint; must be greater than min_temp.
   */
  max_temp?: number;
  /**
   * Setpoint granularity.
   */
  temp_step?: number;
  /**
   * Preset names the device accepts.
   *
   * @maxItems 64
   */
  presets?: Name[];
  /**
   * Fan modes the device accepts.
   *
   * @maxItems 64
   */
  fan_modes?: Name[];
  /**
   * Swing modes the device accepts.
   *
   * @maxItems 64
   */
  swing_modes?: Name[];
  /**
   * Present when the device takes a target humidity (percent); min must be below max.
   */
  humidity?: {
    /**
     * Default 30.
     */
    min?: number;
    /**
     * Default 70.
     */
    max?: number;
    /**
     * Default 1.
     */
    step?: number;
  } | null;
}
