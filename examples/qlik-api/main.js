// @qlik/api through qlik-gateway: no tickets, no Qlik host, no cookies, no CSRF token, no
// certificates. The host is the gateway's own origin and mount; when the gateway session is gone,
// @qlik/api itself sends the browser to the gateway's login, which comes back to this very URL.
import auth from "@qlik/api/auth";
import qix from "@qlik/api/qix";

const MOUNT = "/mashup"; // qlik.mount
const APP_ID = new URLSearchParams(location.search).get("app") || "5a1e5000-5a1e-4000-8000-000000000001";

auth.setDefaultHostConfig({
  host: location.origin + MOUNT,
  authType: "windowscookie",
  loginUri: "/_gateway/login?return_to={location}",
});

const status = document.querySelector('[data-testid="status"]');
const rows = document.querySelector('[data-testid="rows"]');
const show = (state, text) => {
  status.dataset.state = state;
  status.textContent = text;
};

// autoResume: when the socket closes under the page (Qlik renewed its session behind the
// gateway: close 4002), the next call or user activity reconnects and re-creates the session
// objects on the new engine session.
const session = qix.openAppSession({ appId: APP_ID, autoResume: true });
session.onWebSocketEvent((e) => {
  if (e.eventType === "suspended") show("suspended", `reconnecting (closed ${e.code})…`);
  if (e.eventType === "resumed") show("live", "live (reconnected)");
});

const doc = await session.getDoc();
const cube = await doc.createSessionObject({
  qInfo: { qType: "sales-table" },
  qHyperCubeDef: {
    qDimensions: [{ qDef: { qFieldDefs: ["Region"] } }],
    qMeasures: [{ qDef: { qDef: "Sum(Sales)", qLabel: "Sales" } }],
    qInitialDataFetch: [{ qLeft: 0, qTop: 0, qWidth: 2, qHeight: 100 }],
  },
});

async function render() {
  const layout = await cube.getLayout();
  const matrix = layout.qHyperCube.qDataPages[0]?.qMatrix ?? [];
  rows.replaceChildren(...matrix.map(([region, sales]) => {
    const tr = document.createElement("tr");
    tr.dataset.testid = "row";
    tr.dataset.state = region.qState;
    tr.innerHTML = "<td></td><td></td>";
    tr.cells[0].textContent = region.qText;
    tr.cells[1].textContent = sales.qText;
    tr.addEventListener("click", () => cube.selectHyperCubeValues("/qHyperCubeDef", 0, [region.qElemNumber], true));
    return tr;
  }));
  show("live", `live: ${(await doc.getAppLayout()).qTitle}`);
}
cube.on("changed", render);
document.querySelector('[data-testid="clear"]').addEventListener("click", () => doc.clearAll());
await render();
