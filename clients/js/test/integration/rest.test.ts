import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";

import { ApiError, RestClient, type TokenRequest } from "../../src/index.js";
import { eventually } from "./helpers.js";
import { REPO, Stack } from "./stack.js";

const THERMOSTAT = "sim_thermostat_1";

describe("RestClient against the real server", () => {
  let stack: Stack;
  let rest: RestClient;

  before(async () => {
    stack = await Stack.start();
    stack.startSimulator(["--thermostats", "1", "--sensors", "1", "--seed", "1"]);
    const token = await stack.token();
    rest = new RestClient({ url: stack.url, getToken: () => Promise.resolve(token) });
    await eventually("the simulated devices' state", async () => {
      const state = await rest.state(THERMOSTAT);
      return "temperature" in state.values ? state : undefined;
    });
  });

  after(() => stack.stop());

  it("serves the OpenAPI document the SDK's REST types were generated from", async () => {
    const served = (await (await fetch(`${stack.url}/api/v1/openapi.json`)).json()) as unknown;
    const committed = JSON.parse(await readFile(join(REPO, "addon/thermo_bridge_server/http/openapi.json"), "utf8")) as unknown;
    assert.deepEqual(served, committed);
  });

  it("lists devices with filters, reads one device and its state", async () => {
    const all = await rest.devices();
    assert.deepEqual(all.map((device) => device.id).sort(), ["sim_sensor_1", THERMOSTAT]);
    const thermostats = await rest.devices({ kind: "thermostat" });
    assert.deepEqual(thermostats.map((device) => device.id), [THERMOSTAT]);
    const device = await rest.device(THERMOSTAT);
    assert.equal(device.kind, "thermostat");
    assert.equal(device.config.id, THERMOSTAT);
    const state = await rest.state(THERMOSTAT);
    assert.equal(typeof state.values["temperature"], "number");
  });

  it("reads history raw and aggregated", async () => {
    const raw = await rest.history(THERMOSTAT, { keys: ["temperature"], start: new Date(Date.now() - 3600_000) });
    assert.ok(raw.points.length > 0);
    assert.ok(raw.points.every((point) => point.key === "temperature"));
    const buckets = await rest.history(THERMOSTAT, { keys: ["temperature"], start: Date.now() / 1000 - 3600, resolution: "1h" });
    assert.equal(buckets.resolution, 3600);
    assert.ok(buckets.points.every((point) => typeof point.count === "number"));
  });

  it("sends a command (202 pending) whose status becomes acked", async () => {
    const command = await rest.sendCommand(THERMOSTAT, { target_temperature: 22.5 });
    assert.equal(command.status, "pending");
    const acked = await eventually("the ack", async () => {
      const current = await rest.command(command.id);
      return current.status === "acked" ? current : undefined;
    });
    assert.deepEqual(acked.values, { target_temperature: 22.5 });
  });

  it("surfaces the server's errors as ApiError with status, code and details", async () => {
    await assert.rejects(rest.device("no_such_device"), (error: unknown) => {
      assert.ok(error instanceof ApiError);
      assert.equal(error.status, 404);
      assert.equal(error.code, "unknown_device");
      return true;
    });
    await assert.rejects(rest.sendCommand(THERMOSTAT, { target_temperature: 99 }), (error: unknown) => {
      assert.ok(error instanceof ApiError);
      assert.equal(error.status, 422);
      assert.equal(error.code, "invalid_command");
      assert.equal(error.details?.["reason"], "out_of_range");
      return true;
    });
  });

  it("asks for a fresh token once when the server refuses one", async () => {
    const good = await stack.token();
    const reasons: TokenRequest["reason"][] = [];
    const client = new RestClient({
      url: stack.url,
      getToken: (request) => {
        reasons.push(request.reason);
        return Promise.resolve(request.reason === "rejected" ? good : "not-a-token");
      },
    });
    assert.equal((await client.device(THERMOSTAT)).id, THERMOSTAT);
    assert.deepEqual(reasons, ["use", "rejected"]);
    const refused = new RestClient({ url: stack.url, getToken: () => Promise.resolve("not-a-token") });
    await assert.rejects(refused.devices(), (error: unknown) => error instanceof ApiError && error.status === 401);
  });
});
