package ai.aligndistil.kernel.tool;

import ai.aligndistil.kernel.Backend;
import ai.aligndistil.kernel.Variant;
import picocli.CommandLine.ITypeConverter;
import picocli.CommandLine.TypeConversionException;

/** Option converters whose error is the parser's own one-line message (no exception class names). */
final class Converters {
    private Converters() {}

    static final class VariantConverter implements ITypeConverter<Variant> {
        @Override
        public Variant convert(String s) {
            try {
                return Variant.parse(s);
            } catch (IllegalArgumentException e) {
                throw new TypeConversionException(e.getMessage());
            }
        }
    }

    static final class BackendConverter implements ITypeConverter<Backend> {
        @Override
        public Backend convert(String s) {
            try {
                return Backend.parse(s);
            } catch (IllegalArgumentException e) {
                throw new TypeConversionException(e.getMessage());
            }
        }
    }
}
