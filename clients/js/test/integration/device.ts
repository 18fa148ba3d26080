// A device the test controls message by message (config, availability, state, events, how it
// answers commands), speaking the protocol over its own MQTT connection like a real one: for
// what the simulator does not do on demand (refuse a command, stay silent, disappear).
import { type MqttClient, connectAsync } from "mqtt";

const BASE = "thermo_bridge";

export type Answer = "ok" | "error" | "silent";

export class TestDevice {
  /** Every device still connected, so a suite can close them even after a failed test. */
  static readonly open = new Set<TestDevice>();
  readonly id: string;
  /** How the next commands are answered. */
  answer: Answer = "ok";
  /** Every `set` payload received, in order. */
  readonly commands: Record<string, unknown>[] = [];
  readonly #client: MqttClient;

  private constructor(id: string, client: MqttClient) {
    this.id = id;
    this.#client = client;
    client.on("message", (_topic, payload) => this.#onCommand(payload));
    TestDevice.open.add(this);
  }

  static async closeAll(): Promise<void> {
    await Promise.all([...TestDevice.open].map((device) => device.close()));
  }

  static async connect(brokerUrl: string, id: string): Promise<TestDevice> {
    const client = await connectAsync(brokerUrl, {
      clientId: `test-device-${id}`,
      clean: true,
      will: { topic: `${BASE}/${id}/availability`, payload: Buffer.from("offline"), qos: 1, retain: true },
    });
    await client.subscribeAsync(`${BASE}/${id}/set`, { qos: 1 });
    return new TestDevice(id, client);
  }

  config(name = `Test thermostat ${this.id}`): Record<string, unknown> {
    return {
      schema: 1,
      id: this.id,
      kind: "thermostat",
      name,
      measurements: { temperature: { unit: "°C", precision: 1 } },
      events: ["button_press"],
      thermostat: { hvac_modes: ["off", "heat"], setpoint: "single", min_temp: 7, max_temp: 30, temp_step: 0.5 },
    };
  }

  async announce(name?: string): Promise<void> {
    await this.#publish("config", JSON.stringify(this.config(name)), true);
  }

  async availability(online: boolean): Promise<void> {
    await this.#publish("availability", online ? "online" : "offline", true);
  }

  async state(values: Record<string, unknown>, seq: number): Promise<void> {
    await this.#publish("state", JSON.stringify({ ...values, ts: Date.now() / 1000, seq }), false);
  }

  async event(event: string, data: Record<string, unknown>): Promise<void> {
    await this.#publish("event", JSON.stringify({ event, data, ts: Date.now() / 1000 }), false);
  }

  /** The empty retained config: the device is removed. */
  async remove(): Promise<void> {
    await this.#publish("config", "", true);
  }

  async close(): Promise<void> {
    TestDevice.open.delete(this);
    await this.#client.endAsync();
  }

  #onCommand(payload: Buffer): void {
    const command = JSON.parse(payload.toString()) as Record<string, unknown>;
    this.commands.push(command);
    if (this.answer === "silent") return;
    const ack =
      this.answer === "ok"
        ? { id: command["id"], status: "ok", ts: Date.now() / 1000 }
        : { id: command["id"], status: "error", reason: "out_of_range: the test device refuses it", ts: Date.now() / 1000 };
    void this.#publish("ack", JSON.stringify(ack), false);
  }

  async #publish(kind: string, payload: string, retain: boolean): Promise<void> {
    await this.#client.publishAsync(`${BASE}/${this.id}/${kind}`, payload, { qos: 1, retain });
  }
}
