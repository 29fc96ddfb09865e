import { useEffect, useState } from 'react';
import { fetchMe, logout } from '../gateway.js';

/** The signed-in user from `/_gateway/me`, and the logout. */
export default function Header({ title }) {
  const [me, setMe] = useState(null);
  const [busy, setBusy] = useState(false);

  useEffect(() => {
    let active = true;
    fetchMe()
      .then((m) => active && setMe(m))
      .catch(() => {});
    return () => {
      active = false;
    };
  }, []);

  const expires = me?.expiresAt ? new Date(me.expiresAt * 1000).toLocaleString() : null;
  const onLogout = () => {
    setBusy(true);
    logout();
  };

  return (
    <header className="header">
      <strong>{title}</strong>
      <span className="user">
        <span
          data-testid="user-name"
          title={expires ? `Signed in with ${me.provider}; session ends at ${expires} unless used` : undefined}
        >
          {me ? `${me.userDirectory}\\${me.userId}` : '…'}
        </span>
        <button type="button" data-testid="logout" onClick={onLogout} disabled={busy}>
          Log out
        </button>
      </span>
    </header>
  );
}
