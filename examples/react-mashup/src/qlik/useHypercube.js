import { useCallback, useEffect, useState } from 'react';

/** enigma.js's error code for a request cut short by a closed socket (enigma.js/error-codes). */
const NOT_CONNECTED = -1;

/**
 * A session object with the hypercube `properties` on `app`, and its layout, fetched again on
 * every 'changed' event (selections, reloads, a resumed session).
 *
 * Session objects live in the Qlik engine session. When enigma.js resumes onto a new one (the
 * gateway renewed the user's Qlik session after Qlik timed it out), it cannot restore them and
 * emits 'closed': the object is then simply made again.
 *
 * Returns `{ cube, error, select, clearSelections }`: `cube` is the layout's `qHyperCube`.
 */
export function useHypercube(app, properties) {
  const [object, setObject] = useState(null);
  const [cube, setCube] = useState(null);
  const [error, setError] = useState(null);

  useEffect(() => {
    if (!app) return undefined;
    let active = true;
    let current = null;

    const refresh = async (obj) => {
      try {
        const layout = await obj.getLayout();
        if (active && obj === current) setCube(layout.qHyperCube);
      } catch (err) {
        // A layout request cut short by a lost connection is repeated after the resume.
        if (active && err.code !== NOT_CONNECTED) setError(err.message);
      }
    };

    const create = async () => {
      const obj = await app.createSessionObject(properties);
      if (!active) {
        app.destroySessionObject(obj.id).catch(() => {});
        return;
      }
      current = obj;
      obj.on('changed', () => refresh(obj));
      obj.on('closed', () => {
        if (active && obj === current) {
          create().catch((err) => active && err.code !== NOT_CONNECTED && setError(err.message));
        }
      });
      setObject(obj);
      await refresh(obj);
    };

    create().catch((err) => active && err.code !== NOT_CONNECTED && setError(err.message));
    return () => {
      active = false;
      if (current) {
        current.removeAllListeners();
        app.destroySessionObject(current.id).catch(() => {});
      }
    };
  }, [app, properties]);

  /** Toggles the selection of `elemNumber` in dimension `dim`. */
  const select = useCallback(
    async (elemNumber, dim = 0) => {
      if (!object) return;
      setError(null);
      try {
        await object.selectHyperCubeValues('/qHyperCubeDef', dim, [elemNumber], true);
      } catch (err) {
        setError(`Selection failed: ${err.message}`);
      }
    },
    [object],
  );

  const clearSelections = useCallback(async () => {
    if (!app) return;
    setError(null);
    try {
      await app.clearAll(false);
    } catch (err) {
      setError(`Clearing the selections failed: ${err.message}`);
    }
  }, [app]);

  return { cube, error, select, clearSelections };
}
