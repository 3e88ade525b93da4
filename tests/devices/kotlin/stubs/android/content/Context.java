// Stand-in with the signatures of Android's class that EdgeformerModel.kt uses (compile only).
package android.content;

public abstract class Context {
  public abstract java.io.File getFilesDir();

  public abstract android.content.res.AssetManager getAssets();
}
