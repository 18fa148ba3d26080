import "./app.js";

import type { ThermoBridgeApp } from "./app.js";
import { auth0Session, devSession, ingressSession, type Session, type SignIn } from "./auth.js";
import { loadConfig } from "./config.js";
import { applyPageStyles, followHomeAssistantTheme } from "./theme.js";

function isSession(value: Session | SignIn): value is Session {
  return "getToken" in value;
}

async function boot(): Promise<void> {
  applyPageStyles();
  const app = document.querySelector<ThermoBridgeApp>("tb-app") ?? document.body.appendChild(document.createElement("tb-app"));
  try {
    const config = await loadConfig();
    app.version = config.version;
    const auth = config.auth;
    let result: Session | SignIn;
    if (auth.mode === "ingress") {
      followHomeAssistantTheme();
      result = ingressSession(auth.user);
    } else if (auth.mode === "dev") {
      result = devSession((session) => app.start(session));
    } else {
      result = await auth0Session(auth);
    }
    if (isSession(result)) app.start(result);
    else app.signIn = result;
  } catch (error) {
    app.problem = error instanceof Error ? error.message : String(error);
  }
}

void boot();
