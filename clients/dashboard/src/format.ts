import type { DeviceConfig } from "@thermo-bridge/client";

type Measurement = keyof NonNullable<DeviceConfig["measurements"]>;

export const LABELS: Record<string, string> = {
  temperature: "Temperature",
  humidity: "Humidity",
  battery: "Battery",
  battery_voltage: "Battery voltage",
  co2: "CO₂",
  pressure: "Pressure",
  illuminance: "Illuminance",
  pm25: "PM2.5",
  signal: "Signal",
  window_open: "Window",
  low_battery: "Low battery",
  fault: "Fault",
  off: "Off",
  heat: "Heat",
  cool: "Cool",
  heat_cool: "Heat/Cool",
  auto: "Auto",
  dry: "Dry",
  fan_only: "Fan only",
  heating: "Heating",
  cooling: "Cooling",
  idle: "Idle",
  drying: "Drying",
  fan: "Fan",
  defrosting: "Defrosting",
};

export function label(name: string): string {
  return LABELS[name] ?? name.charAt(0).toUpperCase() + name.slice(1).replace(/_/g, " ");
}

/** A measurement with its unit and the device's precision; "—" when unknown. */
export function reading(config: DeviceConfig, key: string, value: unknown): string {
  if (value === null || value === undefined) return "—";
  const spec = config.measurements?.[key as Measurement];
  if (typeof value === "boolean") {
    if (key === "window_open") return value ? "Open" : "Closed";
    return value ? "Yes" : "No";
  }
  if (typeof value === "string") return value;
  if (typeof value !== "number") return JSON.stringify(value);
  const precision = spec?.precision ?? (Number.isInteger(value) ? 0 : 1);
  const unit = spec?.unit ?? "";
  return `${value.toFixed(precision)}${unit ? (unit === "%" || unit.startsWith("°") ? unit : ` ${unit}`) : ""}`;
}

export function time(ts: number): string {
  return new Date(ts * 1000).toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}
