import type { Command } from "./types.js";

/**
 * An error the server answered, over REST (`{"error": {status, code, message, details}}`) or
 * as a failed WebSocket result (`{code, message, details}`, no HTTP status).
 */
export class ApiError extends Error {
  override readonly name = "ApiError";
  /** The HTTP status; undefined for a WebSocket result. */
  readonly status: number | undefined;
  /** Stable and machine-readable: `unknown_device`, `invalid_command`, `rate_limited`… */
  readonly code: string;
  readonly details: Readonly<Record<string, unknown>> | undefined;

  constructor(code: string, message: string, status?: number, details?: Record<string, unknown>) {
    super(message);
    this.code = code;
    this.status = status;
    this.details = details;
  }
}

/** Why a command's promise was rejected after the server accepted it, or why it never went out. */
export type CommandErrorCode =
  | "failed" // the device refused it (reason: the device's)
  | "timed_out" // the device did not answer within the server's command_timeout
  | "queue_full" // too many commands waiting for a connection
  | "closed"; // the client was closed before the command settled

export class CommandError extends Error {
  override readonly name = "CommandError";
  readonly code: CommandErrorCode;
  /** The device's reason (`failed`), else null. */
  readonly reason: string | null;
  /** The command as the server last reported it, when it got that far. */
  readonly command: Command | undefined;

  constructor(code: CommandErrorCode, message: string, command?: Command) {
    super(message);
    this.code = code;
    this.reason = command?.reason ?? null;
    this.command = command;
  }
}

/** A failed WebSocket result's error as an ApiError. */
export function wireError(error: { code: string; message: string; details?: Record<string, unknown> }): ApiError {
  return new ApiError(error.code, error.message, undefined, error.details);
}
