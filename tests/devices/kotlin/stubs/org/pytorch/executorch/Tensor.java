// Stand-in with the signatures of ExecuTorch's AAR (org.pytorch.executorch.Tensor, 1.x) that
// EdgeformerModel.kt uses: compile only, nothing runs.
package org.pytorch.executorch;

public abstract class Tensor {
  public static Tensor fromBlob(long[] data, long[] shape) {
    throw new UnsupportedOperationException("a compile-time stand-in");
  }

  public float[] getDataAsFloatArray() {
    throw new UnsupportedOperationException("a compile-time stand-in");
  }
}
