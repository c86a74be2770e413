package ai.aligndistil.build;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

import javax.xml.parsers.DocumentBuilderFactory;

import org.junit.jupiter.api.Test;
import org.w3c.dom.Document;
import org.w3c.dom.Element;
import org.w3c.dom.Node;

/**
 * The two builds never mix natives, checked from the declarations (nothing is resolved, no GPU artifact is downloaded):
 * pom.xml's profile {@code cpu} (active by default) holds the CPU natives and builds into target/, profile {@code gpu}
 * holds the GPU natives, the CUDA presets and cuda-redist and builds into target-gpu/, and no PyTorch natives are
 * declared outside them; the launcher switches with ALIGNDISTIL_GPU=1; CI runs the default.
 */
class BuildProfilesTest {
    record Dep(String artifact, String classifier, String scope) {}

    static Element child(Element e, String name) {
        for (Node n = e.getFirstChild(); n != null; n = n.getNextSibling())
            if (n instanceof Element c && c.getTagName().equals(name)) return c;
        return null;
    }

    static String text(Element e, String name) {
        Element c = child(e, name);
        return c == null ? null : c.getTextContent().trim();
    }

    static List<Dep> deps(Element owner) {
        List<Dep> out = new ArrayList<>();
        Element ds = child(owner, "dependencies");
        if (ds == null) return out;
        for (Node n = ds.getFirstChild(); n != null; n = n.getNextSibling())
            if (n instanceof Element d && d.getTagName().equals("dependency"))
                out.add(new Dep(text(d, "artifactId"), text(d, "classifier"), text(d, "scope")));
        return out;
    }

    static Element profile(Element project, String id) {
        for (Node n = child(project, "profiles").getFirstChild(); n != null; n = n.getNextSibling())
            if (n instanceof Element p && p.getTagName().equals("profile") && id.equals(text(p, "id"))) return p;
        throw new AssertionError("no profile " + id);
    }

    static boolean torchNatives(Dep d) {
        return d.artifact().equals("pytorch-platform") || (d.artifact().equals("pytorch") && d.classifier() != null)
                || d.artifact().equals("cuda-redist");
    }

    @Test
    void theCpuAndGpuProfilesNeverShareNativesOrABuildFolder() throws Exception {
        Document doc = DocumentBuilderFactory.newInstance().newDocumentBuilder().parse(Path.of("pom.xml").toFile());
        Element project = doc.getDocumentElement();
        for (Dep d : deps(project)) assertFalse(torchNatives(d), "PyTorch natives outside the profiles: " + d);

        Element cpu = profile(project, "cpu"), gpu = profile(project, "gpu");
        assertEquals("true", text(child(cpu, "activation"), "activeByDefault"), "cpu is the default (and -Pgpu switches it off)");
        assertEquals(null, child(gpu, "activation"), "gpu is only ever asked for (-Pgpu)");
        List<Dep> c = deps(cpu), g = deps(gpu);
        assertTrue(c.contains(new Dep("pytorch-platform", null, null)), "cpu: the presets with linux-x86_64 natives: " + c);
        for (Dep d : c) assertFalse(d.classifier() != null && d.classifier().endsWith("-gpu") || d.artifact().startsWith("cuda"), "cpu: " + d);
        assertEquals(null, child(cpu, "build"), "cpu builds into the default target/");

        assertTrue(g.contains(new Dep("pytorch", "linux-x86_64-gpu", null)), "gpu: the GPU natives: " + g);
        assertTrue(g.contains(new Dep("pytorch", null, null)), "gpu: the shared classes jar");
        assertTrue(g.contains(new Dep("cuda", null, "compile")) && g.contains(new Dep("cuda", "linux-x86_64", "runtime")), "gpu: the CUDA presets: " + g);
        assertTrue(g.contains(new Dep("cuda-redist", "linux-x86_64", "runtime")), "gpu: cuda-redist: " + g);
        for (Dep d : g) {
            assertFalse(d.artifact().equals("pytorch-platform"), "gpu must not pull pytorch-platform (its CPU natives): " + d);
            assertFalse(d.artifact().equals("pytorch") && "linux-x86_64".equals(d.classifier()), "gpu: CPU natives: " + d);
        }
        assertEquals("${project.basedir}/target-gpu", text(child(gpu, "build"), "directory"), "gpu builds into its own folder");
        assertTrue(Files.readString(Path.of(".mvn/maven.config")).contains("-Djavacpp.platform=linux-x86_64"));
    }

    @Test
    void theLauncherSwitchesBuildsWithOneVariableAndCiRunsTheDefault() throws Exception {
        String launcher = Files.readString(Path.of("aligndistil"));
        assertTrue(launcher.contains("if [ \"${ALIGNDISTIL_GPU:-0}\" = 1 ]; then build=\"$here/target-gpu\"; profile=\"-Pgpu\"; else build=\"$here/target\"; profile=\"\"; fi"), launcher);
        assertFalse(launcher.contains("-Pcpu"), "the CPU build names no profile, so a caller's -Pgpu switches cpu off instead of adding to it");
        assertTrue(launcher.contains("-cp \"$jar:$build/lib/*\""), "the class path is the chosen build's only");
        String ci = Files.readString(Path.of(".ci/run"));
        assertFalse(ci.contains("ALIGNDISTIL_GPU") || ci.contains("-Pgpu"), "CI never builds the GPU profile");
    }
}
