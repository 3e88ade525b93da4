// Stand-in with the signatures of ExecuTorch's AAR (org.pytorch.executorch.Module, 1.x) that
// EdgeformerModel.kt uses: compile only, nothing runs.
package org.pytorch.executorch;

public class Module {
  public static Module load(final String modelPath) {
    throw new UnsupportedOperationException("a compile-time stand-in");
  }

  public EValue[] forward(EValue... inputs) {
    return execute("forward", inputs);
  }

  public EValue[] execute(String methodName, EValue... inputs) {
    throw new UnsupportedOperationException("a compile-time stand-in");
  }
}
