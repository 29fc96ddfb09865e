import { useCallback, useEffect, useState } from 'react';
import { explainOpenFailure, openApp, openSession } from './session.js';

/**
 * The Qlik app `appId`, opened over the gateway's engine websocket.
 * Returns `{ app, status, message, reconnect }`; `app` is null until it is open.
 */
export function useQlikApp(appId) {
  const [state, setState] = useState({
    app: null,
    status: 'connecting',
    message: 'Connecting to Qlik Sense…',
  });
  const [generation, setGeneration] = useState(0);

  useEffect(() => {
    let active = true;
    const onStatus = (status, message) => {
      if (active) setState((s) => ({ ...s, status, message }));
    };
    const { open, dispose } = openSession(appId, onStatus);
    setState({ app: null, status: 'connecting', message: 'Connecting to Qlik Sense…' });
    const start = async () => {
      try {
        const global = await open();
        const app = await openApp(global, appId);
        const layout = await app.getAppLayout();
        if (!active) return;
        // The app stays usable after a resume; if it cannot be reopened, enigma.js closes it.
        app.on('closed', () => onStatus('closed', 'The app was closed by Qlik Sense'));
        setState({ app, status: 'live', message: `Connected to “${layout.qTitle}”` });
      } catch (err) {
        const why = await explainOpenFailure(err);
        if (why && active) setState({ app: null, status: 'closed', message: `Cannot open the app: ${why}` });
      }
    };
    // Started after the commit: React's StrictMode (development) mounts, unmounts and mounts again
    // at once, and the first mount should not open a socket it closes straight away.
    const timer = setTimeout(start, 0);
    return () => {
      active = false;
      clearTimeout(timer);
      dispose();
    };
  }, [appId, generation]);

  const reconnect = useCallback(() => setGeneration((g) => g + 1), []);
  return { ...state, reconnect };
}
