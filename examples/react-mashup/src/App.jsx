import Header from './components/Header.jsx';
import SalesChart from './components/SalesChart.jsx';
import SalesTable from './components/SalesTable.jsx';
import { APP_ID, MOUNT, engineUrl } from './config.js';
import { useHypercube } from './qlik/useHypercube.js';
import { useQlikApp } from './qlik/useQlikApp.js';

// Region × Sum(Sales): field names of qlik-sim's Sales app (and of any app with those fields).
const SALES_BY_REGION = {
  qInfo: { qType: 'react-mashup-sales' },
  qHyperCubeDef: {
    qDimensions: [{ qDef: { qFieldDefs: ['Region'] } }],
    qMeasures: [{ qDef: { qDef: 'Sum(Sales)', qLabel: 'Sales' } }],
    qInitialDataFetch: [{ qLeft: 0, qTop: 0, qWidth: 2, qHeight: 100 }],
  },
};

export default function App() {
  const { app, status, message, reconnect } = useQlikApp(APP_ID);
  const { cube, error, select, clearSelections } = useHypercube(app, SALES_BY_REGION);

  return (
    <>
      <Header title="Sales mashup" />
      <main>
        <section className="card">
          <div className="toolbar">
            <h1>Sales by region</h1>
            <button type="button" data-testid="clear-selections" onClick={clearSelections} disabled={!app}>
              Clear selections
            </button>
          </div>
          <p className={`status ${status}`} data-testid="status" data-state={status} role="status">
            {message}
            {status === 'closed' && (
              <button type="button" className="link" data-testid="reconnect" onClick={reconnect}>
                Reconnect
              </button>
            )}
          </p>
          {error && (
            <p className="error" data-testid="error" role="alert">
              {error}
            </p>
          )}
        </section>
        {cube && (
          <div className="grid">
            <section className="card">
              <SalesTable cube={cube} onSelect={select} />
            </section>
            <section className="card">
              <SalesChart cube={cube} onSelect={select} />
            </section>
          </div>
        )}
        <section className="card note">
          This page has no authentication code. It opens <code>{engineUrl(APP_ID)}</code> on its own
          origin; qlik-gateway logged you in, keeps your Qlik session on the server and adds it to the
          engine websocket. Qlik&apos;s HTTP resources are under <code>{MOUNT}/</code>.
        </section>
      </main>
    </>
  );
}
