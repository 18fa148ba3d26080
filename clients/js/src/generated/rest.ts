// Generated from addon/thermo_bridge_server/http/openapi.json by openapi-typescript (clients/js/scripts/generate-types.mjs).
// Do not edit: run `npm run generate -w @thermo-bridge/client` after changing the source.

export interface paths {
    "/api/v1/devices": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /**
         * Devices the caller can see
         * @description Requires the `read:devices` permission.
         */
        get: operations["listDevices"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/devices/{device_id}": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /**
         * One device with its capabilities
         * @description Requires the `read:devices` permission.
         */
        get: operations["getDevice"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/devices/{device_id}/state": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /**
         * The device's latest state
         * @description Requires the `read:devices` permission.
         */
        get: operations["getState"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/devices/{device_id}/history": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /**
         * Stored values in a time range, raw or aggregated
         * @description Requires the `read:devices` permission.
         */
        get: operations["getHistory"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/devices/{device_id}/commands": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /**
         * Send a command to a thermostat
         * @description Requires the `write:devices` permission.
         */
        post: operations["sendCommand"];
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/commands/{command_id}": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /**
         * A command's status (its sender and admins only)
         * @description Requires the `read:devices` permission.
         */
        get: operations["getCommand"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/admin/grants": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /**
         * Every user's server-side home grants
         * @description Requires the `admin` permission.
         */
        get: operations["listGrants"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/admin/grants/{sub}": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /**
         * One user's server-side home grants
         * @description Requires the `admin` permission.
         */
        get: operations["getGrants"];
        /**
         * Replace one user's server-side home grants
         * @description Requires the `admin` permission.
         */
        put: operations["putGrants"];
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/admin/devices/{device_id}/home": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        /**
         * Assign a device to a home
         * @description Requires the `admin` permission.
         */
        put: operations["putDeviceHome"];
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/admin/dead-letters": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /**
         * The newest rejected MQTT messages
         * @description Requires the `admin` permission.
         */
        get: operations["listDeadLetters"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/ws": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /**
         * The real-time WebSocket API (the messages: docs/asyncapi.yaml, docs/websocket.md)
         * @description An upgrade to a WebSocket. The token is sent in the first message, never in the URL; a browser's Origin must be the server's own or one of cors_origins.
         */
        get: operations["openWebSocket"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/events": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /**
         * The same events as Server-Sent Events (text/event-stream)
         * @description Requires the `read:devices` permission.
         */
        get: operations["streamEvents"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/events/tickets": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /**
         * A single-use ticket for one EventSource connection (browsers cannot send headers)
         * @description Requires the `read:devices` permission.
         */
        post: operations["createEventTicket"];
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/openapi.json": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** This document */
        get: operations["getOpenApi"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** The dashboard: also the ingress panel and where Home Assistant's device page links */
        get: operations["getDashboard"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/assets/{name}": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** A content-hashed module of the dashboard (cached for a year) */
        get: operations["getDashboardAsset"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/client-config": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** How the dashboard signs in: Auth0's public settings, dev auth, or Home Assistant's ingress */
        get: operations["getClientConfig"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/ingress/token": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /** A token for the Home Assistant user of an ingress request (only from the Supervisor's proxy) */
        post: operations["createIngressToken"];
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/health/live": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** Liveness: the server runs and answers (unauthenticated; the add-on's HEALTHCHECK) */
        get: operations["getLiveness"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/internal/v1/status": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** The server's figures for Home Assistant's Thermo Bridge integration (internal token only) */
        get: operations["getServerStatus"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/health": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** Readiness: broker connected and store answering (unauthenticated) */
        get: operations["getHealth"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/metrics": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** Prometheus metrics (unauthenticated) */
        get: operations["getMetrics"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
}
export type webhooks = Record<string, never>;
export interface components {
    schemas: {
        /** @description The one shape of every error body. */
        Error: {
            error: {
                /** @description The HTTP status, repeated. */
                status: number;
                /** @description Stable machine-readable code. */
                code: string;
                /** @description For humans; may change. */
                message: string;
                /** @description Optional structured context. */
                details?: Record<string, unknown>;
            };
        };
        /** @description The device's announced config in its wire form (docs/protocol.md): capabilities. */
        DeviceConfig: {
            schema: number;
            id: string;
            /** @enum {string} */
            kind: "thermostat" | "sensor";
            name: string;
            measurements: {
                [key: string]: Record<string, unknown>;
            };
            events?: string[];
            thermostat?: Record<string, unknown>;
        };
        Device: {
            id: string;
            name: string;
            /** @enum {string} */
            kind: "thermostat" | "sensor";
            home: string;
            /** @description null until availability is known. */
            online: boolean | null;
            /** @description Epoch seconds. */
            first_seen: number;
            /** @description Epoch seconds. */
            updated_at: number;
            config: components["schemas"]["DeviceConfig"];
        };
        DeviceList: {
            devices: components["schemas"]["Device"][];
            /** @description The next page (path and query, same filters), or null after the last one. */
            next: string | null;
        };
        State: {
            device_id: string;
            values: {
                [key: string]: number | boolean | string | null;
            };
            /** @description Server receive time of the newest update. */
            updated_at: number | null;
            device_ts: number | null;
            seq: number | null;
        };
        HistoryPoint: {
            /** @description Epoch seconds (bucket start when aggregated). */
            ts: number;
            key: string;
            /** @description Raw value, or the bucket mean. */
            value: number | null;
            min?: number | null;
            max?: number | null;
            count?: number;
        };
        History: {
            device_id: string;
            start: number;
            end: number;
            resolution: number | null;
            keys: string[] | null;
            /** @description More points matched than limit. */
            truncated: boolean;
            points: components["schemas"]["HistoryPoint"][];
        };
        CommandRequest: {
            /** @description Command values, checked against the device's capabilities. */
            values: {
                hvac_mode?: string;
                target_temperature?: number;
                target_temperature_low?: number;
                target_temperature_high?: number;
                target_humidity?: number;
                preset?: string;
                fan_mode?: string;
                swing_mode?: string;
            };
        };
        Ticket: {
            /** @description Pass as ?ticket= to GET /api/v1/events, once. */
            ticket: string;
            /** @description Seconds the ticket stays valid. */
            expires_in: number;
        };
        Command: {
            id: string;
            device_id: string;
            values: {
                [key: string]: number | string;
            };
            /** @enum {string} */
            status: "pending" | "acked" | "failed" | "timed_out";
            reason: string | null;
            created_at: number;
            updated_at: number;
        };
        Grants: {
            sub: string;
            homes: string[];
        };
        GrantsUpdate: {
            homes: string[];
        };
        GrantsList: {
            grants: components["schemas"]["Grants"][];
        };
        HomeAssignment: {
            home: string;
        };
        DeadLetter: {
            id: number;
            ts: number;
            topic: string;
            reason: string;
            message: string;
            /** @description UTF-8 with replacement characters. */
            payload_text: string;
            /** @description The exact bytes (truncated to 4096). */
            payload_base64: string;
        };
        DeadLetterList: {
            dead_letters: components["schemas"]["DeadLetter"][];
        };
        Health: {
            /** @enum {string} */
            status: "ok" | "degraded";
            version: string;
            broker: {
                connected: boolean;
            };
            store: {
                ok: boolean;
                error?: string;
            };
        };
        /** @description What the dashboard needs before any login (public: no secret in it). */
        ClientConfig: {
            version: string;
            auth: {
                /** @constant */
                mode: "auth0";
                domain: string;
                client_id: string | null;
                audience: string;
            } | {
                /** @constant */
                mode: "dev";
            } | {
                /** @constant */
                mode: "ingress";
                user: string | null;
            };
        };
        /** @description A short-lived access token for the Home Assistant user of an ingress request. */
        IngressToken: {
            access_token: string;
            /** @constant */
            token_type: "Bearer";
            /** @description Epoch seconds. */
            expires_at: number;
            /** @description Seconds. */
            expires_in: number;
            /** @description homeassistant|<Home Assistant user id> */
            sub: string;
            permissions: string[];
        };
        Liveness: {
            /** @constant */
            status: "alive";
            version: string;
        };
        /** @description What Home Assistant's Thermo Bridge integration shows of the server. */
        ServerStatus: {
            version: string;
            /** @description The devices' MQTT base topic this server serves. */
            base_topic: string;
            broker_connected: boolean;
            /** @description The store answers a small read. */
            store_ok: boolean;
            /** @description Open WebSocket and SSE streams. */
            web_clients: number;
            /** @description MQTT messages taken in. */
            messages_per_minute: number;
            /** @description MQTT messages rejected since start. */
            rejected_total: number;
            /** @description Space the stored data takes; null when the store cannot tell now. */
            database_bytes: number | null;
            /** @description Devices with a known config. */
            devices: number;
        };
    };
    responses: {
        /** @description Malformed parameters or body. */
        BadRequest: {
            headers: {
                [name: string]: unknown;
            };
            content: {
                "application/json": components["schemas"]["Error"];
            };
        };
        /** @description Missing or invalid bearer token. */
        Unauthorized: {
            headers: {
                /** @description RFC 6750 challenge. */
                "WWW-Authenticate"?: string;
                [name: string]: unknown;
            };
            content: {
                "application/json": components["schemas"]["Error"];
            };
        };
        /** @description Missing permission (insufficient_scope) or a device of another home. */
        Forbidden: {
            headers: {
                [name: string]: unknown;
            };
            content: {
                "application/json": components["schemas"]["Error"];
            };
        };
        /** @description Unknown device or command. */
        NotFound: {
            headers: {
                [name: string]: unknown;
            };
            content: {
                "application/json": components["schemas"]["Error"];
            };
        };
        /** @description The body is larger than max_body_bytes. */
        PayloadTooLarge: {
            headers: {
                [name: string]: unknown;
            };
            content: {
                "application/json": components["schemas"]["Error"];
            };
        };
        /** @description The body is not application/json. */
        UnsupportedMediaType: {
            headers: {
                [name: string]: unknown;
            };
            content: {
                "application/json": components["schemas"]["Error"];
            };
        };
        /** @description Per-user rate limit exceeded. */
        TooManyRequests: {
            headers: {
                /** @description Seconds until a request is allowed. */
                "Retry-After"?: number;
                [name: string]: unknown;
            };
            content: {
                "application/json": components["schemas"]["Error"];
            };
        };
        /** @description The identity provider's keys or the broker are unreachable. */
        ServiceUnavailable: {
            headers: {
                [name: string]: unknown;
            };
            content: {
                "application/json": components["schemas"]["Error"];
            };
        };
    };
    parameters: never;
    requestBodies: never;
    headers: never;
    pathItems: never;
}
export type $defs = Record<string, never>;
export interface operations {
    listDevices: {
        parameters: {
            query?: {
                /** @description Only this kind. */
                kind?: "thermostat" | "sensor";
                /** @description Only online (true) or offline (false) devices. */
                online?: boolean;
                /** @description Only this home (among the caller's). */
                home?: string;
                /** @description Devices per page. */
                limit?: number;
                /** @description Only devices whose id sorts after this one (the last id of the previous page). */
                after?: string;
            };
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description A page of devices, ordered by id; `next` links the following one. */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["DeviceList"];
                };
            };
            400: components["responses"]["BadRequest"];
            401: components["responses"]["Unauthorized"];
            403: components["responses"]["Forbidden"];
            429: components["responses"]["TooManyRequests"];
            503: components["responses"]["ServiceUnavailable"];
        };
    };
    getDevice: {
        parameters: {
            query?: never;
            header?: never;
            path: {
                /** @description The device id (a topic segment). */
                device_id: string;
            };
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description The device. */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["Device"];
                };
            };
            400: components["responses"]["BadRequest"];
            401: components["responses"]["Unauthorized"];
            403: components["responses"]["Forbidden"];
            404: components["responses"]["NotFound"];
            429: components["responses"]["TooManyRequests"];
            503: components["responses"]["ServiceUnavailable"];
        };
    };
    getState: {
        parameters: {
            query?: never;
            header?: never;
            path: {
                /** @description The device id (a topic segment). */
                device_id: string;
            };
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description Latest merged state; values empty until the first report. */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["State"];
                };
            };
            400: components["responses"]["BadRequest"];
            401: components["responses"]["Unauthorized"];
            403: components["responses"]["Forbidden"];
            404: components["responses"]["NotFound"];
            429: components["responses"]["TooManyRequests"];
            503: components["responses"]["ServiceUnavailable"];
        };
    };
    getHistory: {
        parameters: {
            query?: {
                /** @description Range start (inclusive), not after end; default end - 24 h. */
                start?: string;
                /** @description Range end (exclusive), not before start; default now. */
                end?: string;
                /** @description Comma-separated state keys (at most 64); default all. */
                keys?: string;
                /** @description Aggregate into buckets of this size (seconds or 30s/5m/1h/1d). */
                resolution?: string;
                /** @description At most this many points (default 10000). */
                limit?: number;
            };
            header?: never;
            path: {
                /** @description The device id (a topic segment). */
                device_id: string;
            };
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description Points ordered by (ts, key). */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["History"];
                };
            };
            400: components["responses"]["BadRequest"];
            401: components["responses"]["Unauthorized"];
            403: components["responses"]["Forbidden"];
            404: components["responses"]["NotFound"];
            429: components["responses"]["TooManyRequests"];
            503: components["responses"]["ServiceUnavailable"];
        };
    };
    sendCommand: {
        parameters: {
            query?: never;
            header?: {
                /** @description Makes the command safe to send again: the same user sending the same key gets the existing command (its current status) and nothing is published twice. The WebSocket's send_command honours the same keys. */
                "Idempotency-Key"?: string;
            };
            path: {
                /** @description The device id (a topic segment). */
                device_id: string;
            };
            cookie?: never;
        };
        requestBody: {
            content: {
                "application/json": components["schemas"]["CommandRequest"];
            };
        };
        responses: {
            /** @description Accepted and published to <base>/<id>/set; poll the command for the device's ack. */
            202: {
                headers: {
                    /** @description The command's URL. */
                    Location?: string;
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["Command"];
                };
            };
            400: components["responses"]["BadRequest"];
            401: components["responses"]["Unauthorized"];
            403: components["responses"]["Forbidden"];
            404: components["responses"]["NotFound"];
            /** @description The idempotency key was used for another device or other values. */
            409: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["Error"];
                };
            };
            413: components["responses"]["PayloadTooLarge"];
            415: components["responses"]["UnsupportedMediaType"];
            /** @description The device refuses these values (details: protocol reason and path). */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["Error"];
                };
            };
            429: components["responses"]["TooManyRequests"];
            503: components["responses"]["ServiceUnavailable"];
        };
    };
    getCommand: {
        parameters: {
            query?: never;
            header?: never;
            path: {
                /** @description The command id. */
                command_id: string;
            };
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description The command. */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["Command"];
                };
            };
            400: components["responses"]["BadRequest"];
            401: components["responses"]["Unauthorized"];
            403: components["responses"]["Forbidden"];
            404: components["responses"]["NotFound"];
            429: components["responses"]["TooManyRequests"];
            503: components["responses"]["ServiceUnavailable"];
        };
    };
    listGrants: {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description Grants by user. */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["GrantsList"];
                };
            };
            400: components["responses"]["BadRequest"];
            401: components["responses"]["Unauthorized"];
            403: components["responses"]["Forbidden"];
            429: components["responses"]["TooManyRequests"];
            503: components["responses"]["ServiceUnavailable"];
        };
    };
    getGrants: {
        parameters: {
            query?: never;
            header?: never;
            path: {
                /** @description The user's Auth0 subject, 1-256 printable characters (URL-encoded). */
                sub: string;
            };
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description The grants. */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["Grants"];
                };
            };
            400: components["responses"]["BadRequest"];
            401: components["responses"]["Unauthorized"];
            403: components["responses"]["Forbidden"];
            429: components["responses"]["TooManyRequests"];
            503: components["responses"]["ServiceUnavailable"];
        };
    };
    putGrants: {
        parameters: {
            query?: never;
            header?: never;
            path: {
                /** @description The user's Auth0 subject, 1-256 printable characters (URL-encoded). */
                sub: string;
            };
            cookie?: never;
        };
        requestBody: {
            content: {
                "application/json": components["schemas"]["GrantsUpdate"];
            };
        };
        responses: {
            /** @description The grants now. */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["Grants"];
                };
            };
            400: components["responses"]["BadRequest"];
            401: components["responses"]["Unauthorized"];
            403: components["responses"]["Forbidden"];
            413: components["responses"]["PayloadTooLarge"];
            415: components["responses"]["UnsupportedMediaType"];
            429: components["responses"]["TooManyRequests"];
            503: components["responses"]["ServiceUnavailable"];
        };
    };
    putDeviceHome: {
        parameters: {
            query?: never;
            header?: never;
            path: {
                /** @description The device id (a topic segment). */
                device_id: string;
            };
            cookie?: never;
        };
        requestBody: {
            content: {
                "application/json": components["schemas"]["HomeAssignment"];
            };
        };
        responses: {
            /** @description The device with its new home. */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["Device"];
                };
            };
            400: components["responses"]["BadRequest"];
            401: components["responses"]["Unauthorized"];
            403: components["responses"]["Forbidden"];
            404: components["responses"]["NotFound"];
            413: components["responses"]["PayloadTooLarge"];
            415: components["responses"]["UnsupportedMediaType"];
            429: components["responses"]["TooManyRequests"];
            503: components["responses"]["ServiceUnavailable"];
        };
    };
    listDeadLetters: {
        parameters: {
            query?: {
                /** @description At most this many (default 100). */
                limit?: number;
            };
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description Newest first. */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["DeadLetterList"];
                };
            };
            400: components["responses"]["BadRequest"];
            401: components["responses"]["Unauthorized"];
            403: components["responses"]["Forbidden"];
            429: components["responses"]["TooManyRequests"];
            503: components["responses"]["ServiceUnavailable"];
        };
    };
    openWebSocket: {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description Switching protocols: the auth phase starts with auth_required. */
            101: {
                headers: {
                    [name: string]: unknown;
                };
                content?: never;
            };
            /** @description The Origin is not allowed (origin_not_allowed). */
            403: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["Error"];
                };
            };
            /** @description Not a WebSocket upgrade request (upgrade_required). */
            426: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["Error"];
                };
            };
            429: components["responses"]["TooManyRequests"];
            /** @description The server is shutting down. */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["Error"];
                };
            };
        };
    };
    streamEvents: {
        parameters: {
            query?: {
                /** @description Only these devices (comma-separated ids). */
                devices?: string;
                /** @description Only these kinds (thermostat, sensor). */
                kinds?: string;
                /** @description Only these homes. */
                homes?: string;
                /** @description Only these event types. */
                events?: string;
                /** @description Resume after this position (as Last-Event-ID). */
                since?: string;
                /** @description A ticket from POST events/tickets. */
                ticket?: string;
            };
            header?: {
                /** @description Set by EventSource on reconnect: resume after it. */
                "Last-Event-ID"?: string;
            };
            path?: never;
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description An endless stream: ready, a snapshot when not resumed, then every matching event (SSE id <epoch>:<offset>) and keep-alive comments (docs/websocket.md). */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "text/event-stream": string;
                };
            };
            400: components["responses"]["BadRequest"];
            401: components["responses"]["Unauthorized"];
            403: components["responses"]["Forbidden"];
            429: components["responses"]["TooManyRequests"];
            503: components["responses"]["ServiceUnavailable"];
        };
    };
    createEventTicket: {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description Valid for expires_in seconds, once, on any replica. */
            201: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["Ticket"];
                };
            };
            400: components["responses"]["BadRequest"];
            401: components["responses"]["Unauthorized"];
            403: components["responses"]["Forbidden"];
            429: components["responses"]["TooManyRequests"];
            503: components["responses"]["ServiceUnavailable"];
        };
    };
    getOpenApi: {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description OpenAPI 3.1 document. */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": Record<string, unknown>;
                };
            };
        };
    };
    getDashboard: {
        parameters: {
            query?: {
                /** @description Auth0's authorization code, when Auth0 sends the user back. */
                code?: string;
                /** @description Auth0's state, with code. */
                state?: string;
                /** @description Auth0's error, when the login failed. */
                error?: string;
                /** @description Auth0's description of the error. */
                error_description?: string;
                /** @description Performance marks for bench/dashboard.py. */
                bench?: string;
            };
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description The page (no-cache). */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "text/html": string;
                };
            };
        };
    };
    getDashboardAsset: {
        parameters: {
            query?: never;
            header?: never;
            path: {
                /** @description The file name, with its hash. */
                name: string;
            };
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description JavaScript. */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "text/javascript": string;
                };
            };
            404: components["responses"]["NotFound"];
        };
    };
    getClientConfig: {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description The page's configuration. */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ClientConfig"];
                };
            };
        };
    };
    createIngressToken: {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description Valid for expires_in seconds; ask again before. */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["IngressToken"];
                };
            };
            403: components["responses"]["Forbidden"];
        };
    };
    getLiveness: {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description Always, while the server serves HTTP. */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["Liveness"];
                };
            };
        };
    };
    getServerStatus: {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description Version, readiness and load. */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ServerStatus"];
                };
            };
            400: components["responses"]["BadRequest"];
            401: components["responses"]["Unauthorized"];
            404: components["responses"]["NotFound"];
        };
    };
    getHealth: {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description Healthy. */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["Health"];
                };
            };
            /** @description Degraded. */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["Health"];
                };
            };
        };
    };
    getMetrics: {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description Prometheus text exposition format 0.0.4. */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "text/plain": string;
                };
            };
        };
    };
}
