// PgJDBC client for pgbatten's integration tests, run as a Java 17 single-file program:
//
//     java -cp postgresql-42.7.x.jar PgConnect.java JDBC_URL USER
//
// Connects with whatever TLS settings the URL carries (sslmode, sslrootcert, sslcert, sslkey,
// sslpassword) and prints "ssl=<t|f> version=<TLS version> user=<role>" from pg_stat_ssl.
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.Properties;

public class PgConnect {
    public static void main(String[] args) {
        if (args.length != 2) {
            System.err.println("usage: java -cp JAR PgConnect.java JDBC_URL USER");
            System.exit(64);
        }
        Properties props = new Properties();
        props.setProperty("user", args[1]);
        props.setProperty("connectTimeout", "10");
        try (Connection conn = DriverManager.getConnection(args[0], props);
             Statement st = conn.createStatement();
             ResultSet rs = st.executeQuery(
                 "SELECT ssl, version, current_user FROM pg_stat_ssl WHERE pid = pg_backend_pid()")) {
            if (!rs.next()) {
                System.err.println("PgJDBC: no pg_stat_ssl row for this session");
                System.exit(1);
            }
            System.out.println("ssl=" + (rs.getBoolean(1) ? "t" : "f") + " version=" + rs.getString(2)
                + " user=" + rs.getString(3));
        } catch (SQLException e) {
            System.err.println("PgJDBC: " + e.getMessage());
            Throwable cause = e.getCause();
            while (cause != null) {
                System.err.println("  caused by: " + cause);
                cause = cause.getCause();
            }
            System.exit(1);
        }
    }
}
