// PgJDBC client for `pgbatten mitm --matrix`, run as a Java 11+ single-file program:
//
//     java -Duser.home=EMPTY_DIR -cp postgresql-42.7.x.jar MatrixClient.java
//
// Reads one request per line on stdin: JDBC_URL <TAB> USER <TAB> PASSWORD <TAB> QUERY. Connects with
// exactly the settings the URL carries, runs the query, and answers with one line on stdout:
// "OK <TAB> first column of the first row" or "ERR <TAB> the driver's message" (one line). An empty line
// or end of input ends it. user.home points at an empty directory, so PgJDBC's defaults
// (~/.postgresql/root.crt, postgresql.crt, postgresql.pk8) cannot change what a setting does.
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.Properties;

public class MatrixClient {
    public static void main(String[] args) throws Exception {
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        System.out.println("READY");
        System.out.flush();
        String line;
        while ((line = in.readLine()) != null && !line.isEmpty()) {
            String[] parts = line.split("\t", -1);
            if (parts.length != 4) {
                System.out.println("ERR\tbad request");
                System.out.flush();
                continue;
            }
            Properties props = new Properties();
            props.setProperty("user", parts[1]);
            props.setProperty("password", parts[2]);
            try (Connection conn = DriverManager.getConnection(parts[0], props);
                 Statement st = conn.createStatement();
                 ResultSet rs = st.executeQuery(parts[3])) {
                String value = rs.next() ? rs.getString(1) : "";
                System.out.println("OK\t" + oneLine(value));
            } catch (SQLException e) {
                StringBuilder why = new StringBuilder(String.valueOf(e.getMessage()));
                for (Throwable cause = e.getCause(); cause != null; cause = cause.getCause()) {
                    why.append(" | caused by: ").append(cause);
                }
                System.out.println("ERR\t" + oneLine(why.toString()));
            } catch (RuntimeException e) {
                System.out.println("ERR\t" + oneLine(e.toString()));
            }
            System.out.flush();
        }
    }

    private static String oneLine(String text) {
        return text.replace('\n', ' ').replace('\r', ' ').replace('\t', ' ');
    }
}
