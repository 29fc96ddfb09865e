const ROW = 32;
const LABEL = 90;
const WIDTH = 480;
const VALUE = 60;

/** The first measure per dimension value as horizontal SVG bars; a click toggles the selection. */
export default function SalesChart({ cube, onSelect }) {
  const rows = cube.qDataPages[0]?.qMatrix ?? [];
  const values = rows.map((r) => (Number.isFinite(r[1]?.qNum) ? r[1].qNum : 0));
  const max = Math.max(...values, 1);
  const span = WIDTH - LABEL - VALUE;
  const title = `${cube.qMeasureInfo[0]?.qFallbackTitle ?? ''} by ${cube.qDimensionInfo[0]?.qFallbackTitle ?? ''}`;

  return (
    <svg
      className="chart"
      viewBox={`0 0 ${WIDTH} ${rows.length * ROW}`}
      role="img"
      aria-label={title}
    >
      {rows.map((row, i) => {
        const w = Math.max((values[i] / max) * span, 1);
        const y = i * ROW;
        return (
          <g
            key={row[0].qElemNumber}
            className={row[0].qState === 'S' ? 'selected' : undefined}
            onClick={() => onSelect(row[0].qElemNumber)}
          >
            <text x={LABEL - 8} y={y + ROW / 2} textAnchor="end" dominantBaseline="middle">
              {row[0].qText}
            </text>
            <rect
              data-testid="chart-bar"
              data-value={row[0].qText}
              data-measure={values[i]}
              x={LABEL}
              y={y + 5}
              width={w}
              height={ROW - 10}
              rx="3"
            />
            <text x={LABEL + w + 6} y={y + ROW / 2} dominantBaseline="middle" className="value">
              {row[1]?.qText}
            </text>
          </g>
        );
      })}
    </svg>
  );
}
