package ai.aligndistil;

import static com.tngtech.archunit.library.Architectures.layeredArchitecture;
import static com.tngtech.archunit.library.dependencies.SlicesRuleDefinition.slices;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

import com.tngtech.archunit.ArchConfiguration;
import com.tngtech.archunit.core.domain.JavaClasses;
import com.tngtech.archunit.core.importer.ClassFileImporter;
import com.tngtech.archunit.core.importer.ImportOption;
import com.tngtech.archunit.library.Architectures.LayeredArchitecture;

/**
 * The packages' layering, checked on the compiled main classes (tests and benchmarks excluded):
 * {@code io} at the bottom imports nothing of ours; {@code kernel} may import {@code io}; {@code model} only
 * those two; {@code train} model, kernel, io; the pipeline's packages import downward only (config, then data,
 * task, profiling, then stages and report, then demo); {@code tools} anything below {@code cli}; {@code cli} is
 * imported by nothing and nothing imports {@code tools}; and no two packages import each other, sub-packages
 * included. A new package must be given its layer here.
 */
class LayersTest {
    static JavaClasses classes;

    @BeforeAll
    static void load() {
        // only our classes: resolving every referenced class from the class path (libtorch's bindings) takes ~20 s
        ArchConfiguration.get().setResolveMissingDependenciesFromClassPath(false);
        // the main classes' folder (or jar) only: scanning every jar of the class path for the package is slow
        java.net.URL main = ai.aligndistil.io.Json.class.getProtectionDomain().getCodeSource().getLocation();
        classes = new ClassFileImporter().withImportOption(ImportOption.Predefined.DO_NOT_INCLUDE_TESTS).importUrl(main);
        assertTrue(classes.size() > 50, "the main classes were not found: " + classes.size());
    }

    static LayeredArchitecture layers() {
        return layeredArchitecture().consideringOnlyDependenciesInAnyPackage("ai.aligndistil..")
                .layer("io").definedBy("ai.aligndistil.io..")
                .layer("kernel").definedBy("ai.aligndistil.kernel..")
                .layer("model").definedBy("ai.aligndistil.model..")
                .layer("train").definedBy("ai.aligndistil.train..")
                .layer("pipeline.config").definedBy("ai.aligndistil.pipeline.config..")
                .layer("pipeline.data").definedBy("ai.aligndistil.pipeline.data..")
                .layer("pipeline.task").definedBy("ai.aligndistil.pipeline.task..")
                .layer("pipeline.profiling").definedBy("ai.aligndistil.pipeline.profiling..")
                .layer("pipeline.stages").definedBy("ai.aligndistil.pipeline.stages..")
                .layer("pipeline.report").definedBy("ai.aligndistil.pipeline.report..")
                .layer("pipeline.demo").definedBy("ai.aligndistil.pipeline.demo..")
                .layer("tools").definedBy("ai.aligndistil.tools..")
                .layer("cli").definedBy("ai.aligndistil.cli..")
                .ensureAllClassesAreContainedInArchitecture()

                .whereLayer("io").mayNotAccessAnyLayer()
                .whereLayer("kernel").mayOnlyAccessLayers("io")
                .whereLayer("model").mayOnlyAccessLayers("kernel", "io")
                .whereLayer("train").mayOnlyAccessLayers("model", "kernel", "io")
                .whereLayer("pipeline.config").mayOnlyAccessLayers("train", "model", "kernel", "io")
                .whereLayer("pipeline.data").mayOnlyAccessLayers("pipeline.config", "train", "model", "kernel", "io")
                .whereLayer("pipeline.task").mayOnlyAccessLayers("pipeline.data", "pipeline.config", "train", "model", "kernel", "io")
                .whereLayer("pipeline.profiling").mayOnlyAccessLayers("pipeline.config", "train", "model", "kernel", "io")
                .whereLayer("pipeline.stages").mayOnlyAccessLayers("pipeline.profiling", "pipeline.task", "pipeline.data", "pipeline.config",
                        "train", "model", "kernel", "io")
                .whereLayer("pipeline.report").mayOnlyAccessLayers("pipeline.task", "pipeline.data", "pipeline.config", "train", "model", "kernel", "io")
                .whereLayer("pipeline.demo").mayOnlyAccessLayers("pipeline.stages", "pipeline.report", "pipeline.profiling", "pipeline.task",
                        "pipeline.data", "pipeline.config", "train", "model", "kernel", "io")
                .whereLayer("tools").mayNotBeAccessedByAnyLayer()
                .whereLayer("cli").mayNotBeAccessedByAnyLayer();
    }

    @Test
    void layersImportDownwardOnly() {
        layers().check(classes);
    }

    @Test
    void noTwoPackagesImportEachOther() {
        slices().matching("ai.aligndistil.(**)").should().beFreeOfCycles().check(classes);
    }
}
