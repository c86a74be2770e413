package ai.aligndistil.kernel;

/**
 * A selected row holds NaN or +inf, a -inf in only some of its three inputs at one column, or no finite
 * logit at all. Names the token (batch index, position) and the column.
 */
public final class NonFiniteLogitsException extends IllegalArgumentException {
    private static final long serialVersionUID = 1L;

    private final long batchIndex;
    private final long position;
    private final long column;

    public NonFiniteLogitsException(String message, long batchIndex, long position, long column) {
        super(message);
        this.batchIndex = batchIndex;
        this.position = position;
        this.column = column;
    }

    /** b of the bad row. */
    public long batchIndex() { return batchIndex; }

    /** t of the bad row. */
    public long position() { return position; }

    /** The vocabulary column, or -1 when the whole row is -inf. */
    public long column() { return column; }
}
