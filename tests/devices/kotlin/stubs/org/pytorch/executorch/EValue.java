// Stand-in with the signatures of ExecuTorch's AAR (org.pytorch.executorch.EValue, 1.x) that
// EdgeformerModel.kt uses: compile only, nothing runs.
package org.pytorch.executorch;

public class EValue {
  public static EValue from(Tensor tensor) {
    throw new UnsupportedOperationException("a compile-time stand-in");
  }

  public Tensor toTensor() {
    throw new UnsupportedOperationException("a compile-time stand-in");
  }
}
