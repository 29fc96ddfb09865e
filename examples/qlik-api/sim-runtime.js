// ONLY for qlik-sim (`qlik-gateway demo`), not for Qlik Sense.
//
// In a browser, @qlik/api is a thin facade: it loads its implementation ("runtime modules"
// auth@v1, qix@v1, invoke-fetch@v1) from Qlik's runtime system at {host}/qlik-embed/main.js,
// which Qlik Sense (client-managed, May 2024 and later) serves. qlik-sim serves only a stand-in
// main.js (for the authentication steps); it hands out these modules, taken from @qlik/api's own
// npm package (the same implementation, built for Node.js and the browser alike).
import * as auth from "qlik-api-chunk:auth";
import * as qix from "qlik-api-chunk:qix";
import * as invokeFetch from "qlik-api-chunk:invoke-fetch";

window.__qlikSimRuntimeModules = {
  "auth@v1": auth,
  "qix@v1": qix,
  "invoke-fetch@v1": invokeFetch,
};
