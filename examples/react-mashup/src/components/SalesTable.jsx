/** The hypercube as a table: one row per dimension value; a click toggles its selection. */
export default function SalesTable({ cube, onSelect }) {
  const headers = [...cube.qDimensionInfo, ...cube.qMeasureInfo].map((i) => i.qFallbackTitle);
  const rows = cube.qDataPages[0]?.qMatrix ?? [];
  const onKey = (e, row) => {
    if (e.key === 'Enter' || e.key === ' ') {
      e.preventDefault();
      onSelect(row[0].qElemNumber);
    }
  };
  return (
    <table className="cube">
      <thead>
        <tr>
          {headers.map((h, i) => (
            <th key={h} className={i ? 'num' : undefined}>
              {h}
            </th>
          ))}
        </tr>
      </thead>
      <tbody>
        {rows.map((row) => (
          <tr
            key={row[0].qElemNumber}
            data-testid="cube-row"
            data-value={row[0].qText}
            aria-selected={row[0].qState === 'S'}
            tabIndex={0}
            onClick={() => onSelect(row[0].qElemNumber)}
            onKeyDown={(e) => onKey(e, row)}
          >
            {row.map((cell, i) => (
              <td key={i} className={i ? 'num' : undefined}>
                {cell.qText}
              </td>
            ))}
          </tr>
        ))}
      </tbody>
    </table>
  );
}
